// Key Vault (RBAC authorization) holding the MongoDB connection string. The app reads it through a
// Key Vault reference resolved with its user-assigned identity (Key Vault Secrets User).

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Key Vault name: 3-24 letters, digits and single hyphens, starting with a letter, globally unique.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

@description('Turn on purge protection. Irreversible: once on it cannot be turned off, and the vault name stays taken for the retention period after deletion.')
param enablePurgeProtection bool

@description('Name of the secret holding the MongoDB connection string.')
@minLength(1)
@maxLength(127)
param mongodbUriSecretName string

@description('The MongoDB connection string (mongodb:// or mongodb+srv://).')
@secure()
param mongodbUri string

@description('Resource id of the user-assigned identity (used for a stable role assignment name).')
param identityResourceId string

@description('Principal (object) id of the user-assigned identity.')
param identityPrincipalId string

var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Key Vault rejects an explicit false once purge protection is on; leave the property out instead.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource mongodbUriSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: mongodbUriSecretName
  properties: {
    value: mongodbUri
    contentType: 'text/plain; MongoDB connection string'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityResourceId, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output keyVaultName string = vault.name

@description('MONGODB_URI app setting: a Key Vault reference to the versionless secret URI (an address, not the value), so the app follows rotations.')
output mongodbUriAppSetting string = '@Microsoft.KeyVault(SecretUri=${mongodbUriSecret.properties.secretUri})'
