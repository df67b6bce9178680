// Optional networking: a VNet with a subnet delegated to Microsoft.App/environments (Flex Consumption
// VNet integration) and a subnet for private endpoints, plus an optional private endpoint to a
// MongoDB Atlas private link service.

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the virtual network.')
@minLength(2)
@maxLength(64)
param vnetName string

@description('Address space of the virtual network.')
param vnetAddressPrefix string

@description('Prefix of the subnet delegated to Microsoft.App/environments for the function app (/27 or larger is advised; one IP per instance).')
param appSubnetPrefix string

@description('Prefix of the subnet for private endpoints.')
param privateEndpointSubnetPrefix string

@description('Resource id (or alias) of the MongoDB Atlas private link service, as shown by Atlas when you add an Azure private endpoint. Empty: no Atlas private endpoint.')
param atlasPrivateLinkServiceId string

@description('Name of the Atlas private endpoint: must equal the endpoint name you gave Atlas.')
@minLength(2)
@maxLength(64)
param atlasPrivateEndpointName string

var appSubnetName = 'snet-functions'
var privateEndpointSubnetName = 'snet-private-endpoints'
var atlasNicName = '${atlasPrivateEndpointName}-nic'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    // Subnets are declared inline (not as child resources) so a redeployment does not try to
    // delete and recreate them.
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'Microsoft.App.environments'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: appSubnetName
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: privateEndpointSubnetName
}

// Atlas approves the connection on its side, so the connection is a manual request. Atlas's
// private endpoint host names resolve through public DNS to the endpoint's private IP: no private
// DNS zone is needed.
resource atlasPrivateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (!empty(atlasPrivateLinkServiceId)) {
  name: atlasPrivateEndpointName
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnet.id
    }
    customNetworkInterfaceName: atlasNicName
    manualPrivateLinkServiceConnections: [
      {
        name: atlasPrivateEndpointName
        properties: {
          privateLinkServiceId: atlasPrivateLinkServiceId
          requestMessage: 'mongo-fabric-mirror function app'
        }
      }
    ]
  }
}

// The endpoint's NIC (named by customNetworkInterfaceName). Outputs are evaluated after every
// resource of this module is deployed, so reading it there sees the endpoint's NIC.
resource atlasNic 'Microsoft.Network/networkInterfaces@2024-05-01' existing = if (!empty(atlasPrivateLinkServiceId)) {
  name: atlasNicName
}

output vnetId string = vnet.id

@description('Subnet the function app integrates with (virtualNetworkSubnetId).')
output appSubnetId string = appSubnet.id

output privateEndpointSubnetId string = privateEndpointSubnet.id

@description('Resource id of the Atlas private endpoint (give it to Atlas); empty when none.')
output atlasPrivateEndpointId string = empty(atlasPrivateLinkServiceId) ? '' : atlasPrivateEndpoint.id

@description('Private IP of the Atlas private endpoint (give it to Atlas); empty when none.')
output atlasPrivateEndpointIp string = empty(atlasPrivateLinkServiceId) ? '' : atlasNic.properties.ipConfigurations[0].properties.privateIPAddress
