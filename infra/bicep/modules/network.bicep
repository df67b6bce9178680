// Optional networking: a VNet with a subnet delegated to Microsoft.App/environments (Flex Consumption
// VNet integration) and a subnet for private endpoints, plus an optional private endpoint to a
// MongoDB Atlas private link service and an optional NAT gateway with a static public IP on the
// app's subnet (one fixed outbound address, for an Atlas IP access list).

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

@description('Give the app subnet a NAT gateway with a static public IP: the one outbound address of the app to the internet (for an IP access list).')
param enableNatGateway bool

@description('Name of the NAT gateway (its public IP is named after it).')
@minLength(2)
@maxLength(64)
param natGatewayName string

var appSubnetName = 'snet-functions'
var privateEndpointSubnetName = 'snet-private-endpoints'
var atlasNicName = '${atlasPrivateEndpointName}-nic'

// A Flex Consumption app integrated with a VNet sends its outbound traffic through the VNet, so a
// NAT gateway on the integrated subnet gives every instance one static public address ("Azure
// Functions networking options", NAT gateway; "Tutorial: Control Azure Functions outbound IP with
// an Azure NAT gateway"). The address is a Standard static public IP, as NAT gateway requires.
resource natPublicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = if (enableNatGateway) {
  name: '${natGatewayName}-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource natGateway 'Microsoft.Network/natGateways@2024-05-01' = if (enableNatGateway) {
  name: natGatewayName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natPublicIp.id
      }
    ]
  }
}

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
          natGateway: enableNatGateway ? { id: natGateway.id } : null
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

@description('Static outbound public IP of the app (add it to the Atlas IP access list); empty without the NAT gateway.')
output outboundIpAddress string = enableNatGateway ? natPublicIp.properties.ipAddress : ''
